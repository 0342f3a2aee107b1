OPENQASM 2.0;
include "/proc/self/environ";
qreg q[1];
creg c[1];
measure q[0] -> c[0];
