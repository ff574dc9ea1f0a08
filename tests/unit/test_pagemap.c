/* test_pagemap.c — the 16-byte page map entry. */
#include "tap.h"
#include "ublk-farmem/store/pagemap.h"

static int test_size(void)
{
	CHECK(sizeof(struct pm_entry) == 16);
	return 0;
}

static int test_fields_round_trip(void)
{
	struct pm_entry e = pm_make(PM_STORED, 0xfffffffe, 0xabcdef, 4096, PM_VERSION_MASK);

	CHECK(pm_state(&e) == PM_STORED);
	CHECK(e.seg == 0xfffffffe && e.off == 0xabcdef);
	CHECK(pm_plen(&e) == 4096);
	CHECK(pm_version(&e) == PM_VERSION_MASK);
	e = pm_make(PM_ZERO, 0, 0, 0, 77);
	CHECK(pm_state(&e) == PM_ZERO && pm_version(&e) == 77 && pm_plen(&e) == 0);
	e = pm_make(PM_UNMAPPED, 0, 0, 1, 5);
	CHECK(pm_state(&e) == PM_UNMAPPED && pm_plen(&e) == 1);
	return 0;
}

static int test_newer(void)
{
	struct pm_entry e = pm_make(PM_STORED, 1, 2, 100, 10);

	CHECK(pm_newer(&e, 11));
	CHECK(!pm_newer(&e, 10));
	CHECK(!pm_newer(&e, 9));
	/* A never-written page accepts the first write. */
	struct pm_entry z = { 0, 0, 0 };
	CHECK(pm_state(&z) == PM_UNMAPPED && pm_newer(&z, 1));
	return 0;
}

static const struct tap_case cases[] = {
	{ "entry is 16 bytes", test_size },
	{ "every field round-trips at its limits", test_fields_round_trip },
	{ "newer-version rule", test_newer },
};

TAP_MAIN(cases)
