OPENQASM 3.0;
include "stdgates.inc";
qubit[1] q;
bit[1] c;
c[0] = measure q[0];
while (c[0] == false) { for int i in [0:999] { x q[0]; } c[0] = measure q[0]; }
