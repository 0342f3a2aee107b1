OPENQASM 3.0;
include "stdgates.inc";
defcalgrammar "openpulse";
cal { extern port d0; }
qubit[1] q;
bit[1] c;
c[0] = measure q[0];
