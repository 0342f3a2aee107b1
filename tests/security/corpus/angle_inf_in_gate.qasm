OPENQASM 2.0;
include "qelib1.inc";
gate spin(t) a { rz(t * 1e300 * 1e300) a; }
qreg q[1];
creg c[1];
spin(1) q[0];
measure q[0] -> c[0];
