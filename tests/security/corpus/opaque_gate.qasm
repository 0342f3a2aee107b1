OPENQASM 2.0;
include "qelib1.inc";
opaque mystery a;
qreg q[1];
creg c[1];
mystery q[0];
measure q[0] -> c[0];
