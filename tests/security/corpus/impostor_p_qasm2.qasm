OPENQASM 2.0;
gate p(t) a { U(pi,0,pi) a; }
qreg q[1];
creg c[1];
p(0.1) q[0];
measure q[0] -> c[0];
