OPENQASM 3.0;
include "stdgates.inc";
// xqubit[5000000] q;
bit[1] c;
// c[0] = measure q[0];
