/* The physical floor of any plugin call: a bare process start. cni_latency builds this with
 * `gcc -O2 -static` and spawns it exactly as it spawns the plugins (same environment, the
 * network configuration on a stdin pipe, stdout and stderr to /dev/null). It exits at once. */
int main(void) {
    return 0;
}
