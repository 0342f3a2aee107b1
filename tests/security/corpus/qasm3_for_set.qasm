OPENQASM 3.0;
include "stdgates.inc";
qubit[1] q;
bit[1] c;
for int i in {0, 1, 2} { x q[0]; }
c[0] = measure q[0];
