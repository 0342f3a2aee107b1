OPENQASM 3.0;
include "stdgates.inc";
qubit[1] q;
bit[1] c;
gphase(1e308*10);
c[0] = measure q[0];
