OPENQASM 3.0;
include "stdgates.inc";
input angle[$5000000] a;
bit[1] c;
c[0] = measure $0;
