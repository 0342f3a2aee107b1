OPENQASM 3.0;
include "stdgates.inc";
// one parameter, bound at submit: qrt submit examples/ansatz.qasm --param theta=0.5
input float theta;
qubit[2] q;
bit[2] c;
ry(theta) q[0];
cx q[0], q[1];
c = measure q;
