/*
 * libosmocore side of scripts/bench-algos: computes N authentication vectors per algorithm with
 * osmo_auth_gen_vec() and prints "<algorithm> <vectors per second>" (best of 3 runs).
 * RAND changes every iteration (splitmix64 of the loop counter, as in
 * applet-model/examples/algo_rate.rs) so nothing can be hoisted out of the loop.
 *
 * Build: cc -O2 bench-algos.c $(pkg-config --cflags --libs libosmocore libosmogsm)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <osmocom/crypt/auth.h>

static const uint8_t KI[16] = { 0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f,
				0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc };
static const uint8_t OPC[16] = { 0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e,
				 0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf };
static const uint8_t AMF[2] = { 0xb9, 0xb9 };

static volatile uint8_t sink;

static void next_rand(uint64_t *counter, uint8_t out[16])
{
	for (int half = 0; half < 2; half++) {
		uint64_t z = (*counter += 0x9e3779b97f4a7c15ULL);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		z ^= z >> 31;
		for (int i = 0; i < 8; i++)
			out[half * 8 + i] = (uint8_t)(z >> (8 * i));
	}
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double rate(enum osmo_auth_algo algo, long n)
{
	struct osmo_sub_auth_data aud;
	struct osmo_auth_vector vec;
	uint8_t rand[16], acc = 0;
	uint64_t counter = 0;
	double best = 0;

	memset(&aud, 0, sizeof(aud));
	aud.algo = algo;
	if (algo == OSMO_AUTH_ALG_MILENAGE) {
		aud.type = OSMO_AUTH_TYPE_UMTS;
		memcpy(aud.u.umts.k, KI, 16);
		memcpy(aud.u.umts.opc, OPC, 16);
		memcpy(aud.u.umts.amf, AMF, 2);
		aud.u.umts.opc_is_op = 0;
		aud.u.umts.ind_bitlen = 5;
		aud.u.umts.sqn = 0xff9bb4d0b607ULL;
	} else {
		aud.type = OSMO_AUTH_TYPE_GSM;
		memcpy(aud.u.gsm.ki, KI, 16);
	}

	for (int run = 0; run < 3; run++) {
		double t0 = now();
		for (long i = 0; i < n; i++) {
			next_rand(&counter, rand);
			if (osmo_auth_gen_vec(&vec, &aud, rand) < 0) {
				fprintf(stderr, "osmo_auth_gen_vec failed\n");
				exit(1);
			}
			acc ^= vec.sres[0] ^ vec.kc[7] ^ vec.res[0] ^ vec.autn[15];
		}
		double r = n / (now() - t0);
		if (r > best)
			best = r;
	}
	sink = acc;
	return best;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 200000;

	printf("comp128v1 %.0f\n", rate(OSMO_AUTH_ALG_COMP128v1, n));
	printf("comp128v3 %.0f\n", rate(OSMO_AUTH_ALG_COMP128v3, n));
	printf("milenage %.0f\n", rate(OSMO_AUTH_ALG_MILENAGE, n));
	return 0;
}
