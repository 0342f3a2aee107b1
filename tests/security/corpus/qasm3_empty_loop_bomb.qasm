OPENQASM 3.0;
include "stdgates.inc";
qubit[1] q;
bit[1] c;
// nothing in the body, but every pass is a step of the simulator
for int i in [0:100000000] { }
c[0] = measure q[0];
