/* The floor's front (pop-popup's shape, qmail-popup's design): greet, read USER and PASS,
 * fork, exec CHECKPROG SUBPROG... with "user\0pass\0ts\0" on a pipe at fd 3, wait, and on a
 * failed check say -ERR. Deliberately trivial: no timeouts, no APOP, no limits beyond the
 * line buffer. It exists only to measure what three exec'd processes per session cost. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

static char line[512];

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
	if (n && line[n - 1] == '\r')
		n--;
	line[n] = 0;
	return (int)n;
}

static void put(const char *s) { (void)!write(1, s, strlen(s)); }

int main(int argc, char **argv)
{
	char user[512], pass[512], buf[1100];
	if (argc < 3)
		return 100;
	put("+OK floor ready\r\n");
	user[0] = 0;
	for (;;) {
		if (getline_crlf() < 0)
			return 0;
		if (!strncasecmp(line, "USER ", 5)) {
			snprintf(user, sizeof user, "%s", line + 5);
			put("+OK\r\n");
		} else if (!strncasecmp(line, "PASS ", 5) && user[0]) {
			int p[2], st;
			size_t ul = strlen(user), pl;
			snprintf(pass, sizeof pass, "%s", line + 5);
			pl = strlen(pass);
			memcpy(buf, user, ul + 1);
			memcpy(buf + ul + 1, pass, pl + 1);
			memcpy(buf + ul + pl + 2, "0", 2);
			if (pipe(p))
				return 111;
			pid_t pid = fork();
			if (pid < 0)
				return 111;
			if (pid == 0) {
				close(p[1]);
				if (p[0] != 3) {
					dup2(p[0], 3);
					close(p[0]);
				}
				execv(argv[1], argv + 1);
				_exit(111);
			}
			close(p[0]);
			(void)!write(p[1], buf, ul + pl + 4);
			close(p[1]);
			if (waitpid(pid, &st, 0) != pid)
				return 111;
			if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
				return 0;
			put("-ERR authorization failed\r\n");
		} else if (!strncasecmp(line, "QUIT", 4)) {
			put("+OK\r\n");
			return 0;
		} else {
			put("-ERR\r\n");
		}
	}
}
