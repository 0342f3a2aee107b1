OPENQASM 2.0;
include "qelib1.inc";
gate g0 a { x a; x a; x a; x a; x a; x a; x a; x a; }
gate g1 a { g0 a; g0 a; g0 a; g0 a; g0 a; g0 a; g0 a; g0 a; }
gate g2 a { g1 a; g1 a; g1 a; g1 a; g1 a; g1 a; g1 a; g1 a; }
qreg q[5];
creg c[5];
g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q;
g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q;
g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q;
g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q;
g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q;
g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q;
g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q;
g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q;
g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q;
g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q; g2 q;
measure q -> c;
