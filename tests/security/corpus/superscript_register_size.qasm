OPENQASM 2.0;
include "qelib1.inc";
qreg q[²];
creg c[1];
measure q[0] -> c[0];
