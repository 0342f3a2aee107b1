OPENQASM 2.0;
gate h a { U(pi,0,pi) a; }
qreg q[1];
creg c[1];
h q[0];
measure q[0] -> c[0];
