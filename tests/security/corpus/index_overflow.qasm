OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[18446744073709551617];
measure q -> c;
