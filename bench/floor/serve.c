/* The floor's server: open SPOOLDIR/<first letter>/$USER (argv[1] is SPOOLDIR), count its
 * messages ("From " lines) and bytes for STAT, answer QUIT. Trivial on purpose. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char line[512], box[65536];

static int getline_crlf(void)
{
	size_t n = 0;
	char c;
	while (n + 1 < sizeof line) {
		if (read(0, &c, 1) != 1)
			return -1;
		if (c == '\n')
			break;
		line[n++] = c;
	}
	line[n] = 0;
	return (int)n;
}

int main(int argc, char **argv)
{
	char path[4096], out[128];
	const char *u = getenv("USER");
	long msgs = 0, bytes = 0;
	if (argc < 2 || !u || !*u)
		return 111;
	snprintf(path, sizeof path, "%s/%c/%s", argv[1], u[0], u);
	int fd = open(path, O_RDONLY);
	if (fd >= 0) {
		ssize_t r = read(fd, box, sizeof box - 1);
		close(fd);
		if (r > 0) {
			box[r] = 0;
			bytes = r;
			for (char *p = box; p; p = strstr(p + 1, "\nFrom "))
				if (p != box || !strncmp(p, "From ", 5))
					msgs++;
		}
	}
	(void)!write(1, "+OK\r\n", 5);
	while (getline_crlf() >= 0) {
		if (!strncasecmp(line, "STAT", 4)) {
			int n = snprintf(out, sizeof out, "+OK %ld %ld\r\n", msgs, bytes);
			(void)!write(1, out, (size_t)n);
		} else if (!strncasecmp(line, "QUIT", 4)) {
			(void)!write(1, "+OK\r\n", 5);
			return 0;
		} else {
			(void)!write(1, "-ERR\r\n", 6);
		}
	}
	return 0;
}
