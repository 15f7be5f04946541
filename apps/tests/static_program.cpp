// A statically linked program: `flotilla run` must say that the preload library cannot reach it.
int main() { return 0; }
