/* The floor's checkpassword: read "user\0pass\0ts\0" from fd 3, find the user in a passwd-file
 * (argv[1]; lines user:{SCHEME}secret:uid:gid::home::), verify {PLAIN} with strcmp and a
 * crypt scheme with libcrypt's crypt() (the same work pop-checkpassword and Dovecot do), drop
 * to the uid/gid when root, chdir home, set USER/HOME and exec argv[2...]. Exit 1 on a bad
 * password, 111 on trouble. */
#include <crypt.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char in[1100], fl[1024];
	size_t n = 0;
	ssize_t r;
	if (argc < 3)
		return 111;
	while (n < sizeof in - 1 && (r = read(3, in + n, sizeof in - 1 - n)) > 0)
		n += (size_t)r;
	in[n] = 0;
	close(3);
	const char *user = in;
	size_t ul = strlen(user);
	if (ul + 1 >= n)
		return 111;
	const char *pass = in + ul + 1;
	FILE *f = fopen(argv[1], "r");
	if (!f)
		return 111;
	while (fgets(fl, sizeof fl, f)) {
		char *c = strchr(fl, ':');
		if (!c || (size_t)(c - fl) != ul || memcmp(fl, user, ul))
			continue;
		char *pw = c + 1, *e = strchr(pw, ':');
		if (!e)
			return 111;
		*e = 0;
		char *uid = e + 1, *gid = strchr(uid, ':');
		if (!gid)
			return 111;
		*gid++ = 0;
		char *g2 = strchr(gid, ':');
		if (!g2 || g2[1] != ':')
			return 111;
		*g2 = 0;
		char *home = g2 + 2, *h2 = strchr(home, ':');
		if (!h2)
			return 111;
		*h2 = 0;
		int ok;
		if (!strncmp(pw, "{PLAIN}", 7)) {
			ok = !strcmp(pw + 7, pass);
		} else {
			char *h = strchr(pw, '}');
			h = h ? h + 1 : pw;
			struct crypt_data cd;
			memset(&cd, 0, sizeof cd);
			char *out = crypt_r(pass, h, &cd);
			ok = out && !strcmp(out, h);
		}
		fclose(f);
		if (!ok)
			return 1;
		if (getuid() == 0) {
			if (setgroups(0, NULL) || setgid((gid_t)atol(gid)) || setuid((uid_t)atol(uid)))
				return 111;
		}
		if (chdir(home))
			return 111;
		setenv("USER", user, 1);
		setenv("HOME", home, 1);
		execv(argv[2], argv + 2);
		return 111;
	}
	fclose(f);
	return 1;
}
