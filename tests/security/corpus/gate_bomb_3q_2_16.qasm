OPENQASM 2.0;
include "qelib1.inc";
gate g0 a,b,c { ccx a,b,c; }
gate g1 a,b,c { g0 a,b,c; g0 a,b,c; }
gate g2 a,b,c { g1 a,b,c; g1 a,b,c; }
gate g3 a,b,c { g2 a,b,c; g2 a,b,c; }
gate g4 a,b,c { g3 a,b,c; g3 a,b,c; }
gate g5 a,b,c { g4 a,b,c; g4 a,b,c; }
gate g6 a,b,c { g5 a,b,c; g5 a,b,c; }
gate g7 a,b,c { g6 a,b,c; g6 a,b,c; }
gate g8 a,b,c { g7 a,b,c; g7 a,b,c; }
gate g9 a,b,c { g8 a,b,c; g8 a,b,c; }
gate g10 a,b,c { g9 a,b,c; g9 a,b,c; }
gate g11 a,b,c { g10 a,b,c; g10 a,b,c; }
gate g12 a,b,c { g11 a,b,c; g11 a,b,c; }
gate g13 a,b,c { g12 a,b,c; g12 a,b,c; }
gate g14 a,b,c { g13 a,b,c; g13 a,b,c; }
gate g15 a,b,c { g14 a,b,c; g14 a,b,c; }
gate g16 a,b,c { g15 a,b,c; g15 a,b,c; }
qreg q[3];
creg c[3];
g16 q[0],q[1],q[2];
measure q -> c;
