OPENQASM 3.0;
include "stdgates.inc";
qreg q[1000*1000*10];
bit[1] c;
c[0] = measure q[0];
