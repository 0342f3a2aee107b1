OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
ctrl(²) @ x q[0], q[1];
c = measure q;
