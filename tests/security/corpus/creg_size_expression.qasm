OPENQASM 2.0;
include "qelib1.inc";
qreg q[1];
creg c[1000*1000*10];
measure q[0] -> c[0];
