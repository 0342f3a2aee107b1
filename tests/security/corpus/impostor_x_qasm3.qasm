OPENQASM 3.0;
gate x a { U(0, 0, 0) a; }
qubit[1] q;
bit[1] c;
x q[0];
c[0] = measure q[0];
