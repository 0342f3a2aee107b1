OPENQASM 3.0;
include "stdgates.inc";
def flip(qubit a) { x a; }
qubit[1] q;
bit[1] c;
flip(q[0]);
c[0] = measure q[0];
