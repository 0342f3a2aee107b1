OPENQASM 2.0;
include "qelib1.inc";
opaque mystery a;
gate wrapper a { h a; mystery a; }
qreg q[1];
creg c[1];
wrapper q[0];
measure q[0] -> c[0];
