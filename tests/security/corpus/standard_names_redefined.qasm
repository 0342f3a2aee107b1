OPENQASM 2.0;
gate x a { U(0,0,0) a; }
gate s a {U(0,0,0) a;}
gate sx a {U(0,0,0) a;}
gate cx a,b { CX a,b; }
gate ecr q0,q1 { s q0; sx q1; cx q0,q1; x q0; }
qreg q[2];
creg c[2];
ecr q[0],q[1];
measure q -> c;
