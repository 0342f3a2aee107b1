OPENQASM 2.0;
include "qelib1.inc";
gate sx a { x a; }
qreg q[1];
creg c[1];
sx q[0];
measure q[0] -> c[0];
