OPENQASM 3.0;
include "stdgates.inc";
@foo barqubit[5000000] q;
bit[1] c;
c[0] = measure q[0];
