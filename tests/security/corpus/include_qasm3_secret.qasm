OPENQASM 3.0;
include "@SECRET@";
qubit[1] q;
bit[1] c;
c = measure q;
