/* Fixture for the symbolizer's separate-debug-file tests: two local
   (static) functions only a symbol table names, one exported. */
__attribute__((noinline)) static int fixture_local_alpha(int x) { return x * 3 + 1; }
__attribute__((noinline)) static int fixture_local_beta(int x) { return fixture_local_alpha(x) ^ 0x55; }
int fixture_exported(int x) { return fixture_local_beta(x) + fixture_local_alpha(x); }
