OPENQASM 3.0;
include "stdgates.inc";
bit[1] c;
let a = $5000000;
c[0] = measure $0;
