OPENQASM 3.0;
include "stdgates.inc";
qubit[14] q;
bit[1] c;
pow(2) @ ctrl(13) @ x q[0];
c[0] = measure q[0];
