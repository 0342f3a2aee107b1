OPENQASM 3.0;
include "stdgates.inc";
qubit[1] q;
bit[1] c;
c[0] = measure q[0];
switch (c) { case 0 { x q[0]; } default { } }
c[0] = measure q[0];
