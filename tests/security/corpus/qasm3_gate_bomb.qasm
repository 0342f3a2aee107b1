OPENQASM 3.0;
include "stdgates.inc";
gate g0 a { x a; x a; x a; x a; }
gate g1 a { g0 a; g0 a; g0 a; g0 a; }
gate g2 a { g1 a; g1 a; g1 a; g1 a; }
gate g3 a { g2 a; g2 a; g2 a; g2 a; }
gate g4 a { g3 a; g3 a; g3 a; g3 a; }
gate g5 a { g4 a; g4 a; g4 a; g4 a; }
gate g6 a { g5 a; g5 a; g5 a; g5 a; }
gate g7 a { g6 a; g6 a; g6 a; g6 a; }
gate g8 a { g7 a; g7 a; g7 a; g7 a; }
gate g9 a { g8 a; g8 a; g8 a; g8 a; }
qubit[1] q;
bit[1] c;
g9 q[0];
c[0] = measure q[0];
