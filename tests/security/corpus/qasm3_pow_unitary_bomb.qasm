OPENQASM 3.0;
include "stdgates.inc";
qubit[14] q;
bit[14] c;
pow(3) @ ctrl(13) @ x q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], q[9], q[10], q[11], q[12], q[13];
c = measure q;
