#!/usr/bin/perl
# prom_validate.pl — check that a scrape is valid Prometheus text exposition
# format 0.0.4, strictly enough to catch what our helpers could get wrong.
#
# usage: prom_validate.pl [FILE]   (stdin without FILE)
# Exits 0 and prints "ok families=N samples=M", or exits 1 naming the first
# offending line.  Rules checked: line grammar (metric and label names,
# quoted and escaped label values, float values incl. NaN/+Inf/-Inf,
# optional integer timestamp); a TYPE line, at most one, before the first
# sample of every family; at most one HELP; a family's samples contiguous;
# no duplicate series; counters non-negative; histograms with strictly
# increasing `le`, non-decreasing bucket counts, a final +Inf bucket equal
# to _count, and a _sum; body ends with a newline.
use strict;
use warnings;

my $NAME  = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
my $LNAME = qr/[a-zA-Z_][a-zA-Z0-9_]*/;
my $LVAL  = qr/"(?:[^"\\\n]|\\[\\"n])*"/;
my $PAIR  = qr/$LNAME=$LVAL/;
my $NUM   = qr/(?:[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?Inf|NaN)/;
my %TYPES = map { $_ => 1 } qw(counter gauge histogram summary untyped);

my (%type, %help, %closed, %series, %hist, $cur, $ln, $nsamples);

sub fail { print STDERR "prom_validate: line $ln: $_[0]\n"; exit 1; }

sub num { my $v = shift; return $v =~ /^\+?Inf$/ ? 9**9**9 :
	$v eq '-Inf' ? -9**9**9 : $v eq 'NaN' ? 'nan' : $v + 0; }

# Which family a sample name belongs to.
sub family_of {
	my $n = shift;
	return $n if $type{$n};
	if ($n =~ /^(.*)_(bucket|sum|count)$/ && $type{$1}) {
		my ($f, $suffix) = ($1, $2);
		return $f if $type{$f} eq 'histogram';
		return $f if $type{$f} eq 'summary' && $suffix ne 'bucket';
	}
	fail("sample '$n' has no TYPE line before it");
}

sub enter_family {
	my $f = shift;
	return if defined $cur && $cur eq $f;
	fail("family '$f' continues after another family began") if $closed{$f};
	$closed{$cur} = 1 if defined $cur;
	$cur = $f;
}

local $/;
my $text = <>;
$ln = 0;
fail('empty body') unless defined $text && length $text;
$ln = 1 + ($text =~ tr/\n//);
fail('body does not end with a newline') unless $text =~ /\n\z/;
$ln = 0;
for my $line (split /\n/, $text) {
	$ln++;
	next if $line eq '';
	if ($line =~ /^#\s*(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/) {
		my ($kw, $n, $rest) = ($1, $2, $3 // '');
		fail("bad metric name '$n'") unless $n =~ /^$NAME$/;
		if ($kw eq 'TYPE') {
			fail("second TYPE for '$n'") if $type{$n};
			fail("TYPE for '$n' after its samples") if $closed{$n} ||
				(defined $cur && $cur eq $n);
			fail("unknown type '$rest'") unless $TYPES{$rest};
			$type{$n} = $rest;
		} else {
			fail("second HELP for '$n'") if $help{$n}++;
			fail("bad escape in HELP") if $rest =~ /\\(?![\\n])/;
		}
		next;
	}
	next if $line =~ /^#/;
	fail("not a sample line: $line") unless
		$line =~ /^($NAME)(?:\{((?:$PAIR(?:,$PAIR)*,?)?)\})?[ \t]+($NUM)(?:[ \t]+(-?[0-9]+))?$/;
	my ($n, $labels, $v) = ($1, $2 // '', $3);
	my %l;
	while ($labels =~ /($LNAME)=($LVAL)/g) {
		fail("label '$1' repeated") if exists $l{$1};
		$l{$1} = $2;
	}
	my $key = $n . '{' . join(',', map { "$_=$l{$_}" } sort keys %l) . '}';
	fail("duplicate series $key") if $series{$key}++;
	my $f = family_of($n);
	enter_family($f);
	$nsamples++;
	my $t = $type{$f};
	fail("counter '$n' is negative or NaN: $v") if $t eq 'counter' &&
		($v eq 'NaN' || num($v) < 0);
	next unless $t eq 'histogram';
	my $le = delete $l{le};
	my $g = $f . '{' . join(',', map { "$_=$l{$_}" } sort keys %l) . '}';
	my $h = $hist{$g} //= { line => $ln };
	if ($n eq "${f}_bucket") {
		fail("bucket without le") unless defined $le;
		(my $lev = $le) =~ s/^"|"$//g;
		fail("le '$lev' is not a number") unless $lev =~ /^$NUM$/;
		fail("bucket after +Inf") if $h->{inf};
		fail("le not increasing") if defined $h->{le} && num($lev) <= $h->{le};
		fail("bucket counts decrease") if defined $h->{cnt} && num($v) < $h->{cnt};
		$h->{le} = num($lev);
		$h->{cnt} = num($v);
		$h->{inf} = $v if $lev =~ /^\+?Inf$/;
	} elsif ($n eq "${f}_count") {
		$h->{count} = $v;
	} elsif ($n eq "${f}_sum") {
		$h->{sum} = 1;
	} else {
		fail("'$n' is not part of histogram '$f'");
	}
}
for my $g (sort keys %hist) {
	my $h = $hist{$g};
	$ln = $h->{line};
	fail("histogram $g has no +Inf bucket") unless defined $h->{inf};
	fail("histogram $g has no _count") unless defined $h->{count};
	fail("histogram $g has no _sum") unless $h->{sum};
	fail("histogram $g: +Inf bucket $h->{inf} != _count $h->{count}")
		unless num($h->{inf}) == num($h->{count});
}
fail('no samples') unless $nsamples;
printf "ok families=%d samples=%d\n", scalar(keys %type), $nsamples;
