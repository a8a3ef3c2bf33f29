// placeholder: the pool + batcher benchmark (see bench/bench_batching.py)
int main() { return 0; }
