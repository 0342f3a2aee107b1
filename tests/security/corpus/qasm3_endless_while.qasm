OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
c[0] = measure q[0];
// nothing in the loop writes c[0]: it would never end, and is cut at its most passes
while (c[0] == false) { rz(0.1) q[1]; }
c[1] = measure q[1];
