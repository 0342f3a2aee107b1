OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
ctrl @ pow(0.5) @ h q[0], q[1];
c = measure q;
