/* The physical floor of a call that must record something durably (ADD, DEL): a process
 * start plus the creation of one small file that survives a power cut. cni_latency builds
 * this with `gcc -O2 -static` and spawns it as it spawns the plugins, with two arguments:
 *
 *     floor-durable-create DIR NAME
 *
 * It creates DIR/NAME (which must not exist), writes 40 bytes to it, fdatasyncs it, fsyncs
 * DIR so that the new name is durable too, and exits 0; any failure exits 1. The caller
 * removes the file afterwards, outside the timed part. */
#include <fcntl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    /* A lease's size: a container ID, "\r\n" and the interface name. */
    static const char data[40] = "0123456789abcdef0123456789abcdef01\r\neth0";

    if (argc != 3)
        return 2;
    int dir = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return 1;
    int fd = openat(dir, argv[2], O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0)
        return 1;
    if (write(fd, data, sizeof data) != (ssize_t)sizeof data || fdatasync(fd) != 0 || close(fd) != 0)
        return 1;
    if (fsync(dir) != 0)
        return 1;
    return 0;
}
