#!/usr/bin/perl
# host-control.pl PORT DIR — lets a scenario inside the guest act on the
# host at the moment it chooses (QEMU user networking: the guest connects
# to 10.0.2.2:PORT).  One command per connection, one reply line:
#
#   ping          -> pong
#   kill9 I       -> kill -9 memserver I (its pid is in DIR/msI.pid) -> ok
#   alive I       -> yes | no
#
# Only these commands: the guest cannot run anything else on the host.
# Listens on the loopback only; exits when its parent's pipe closes
# (tests/vm/check kills it in its cleanup trap anyway).
use strict;
use warnings;
use IO::Socket::INET;

my ($port, $dir) = @ARGV;
die "usage: host-control.pl PORT DIR\n" unless defined $dir;
my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
				Listen => 4, ReuseAddr => 1)
	or die "host-control: listen 127.0.0.1:$port: $!\n";
$| = 1;
print "ready\n";

sub pid_of {
	my ($i) = @_;
	return undef unless $i =~ /^\d+$/;
	open(my $f, '<', "$dir/ms$i.pid") or return undef;
	my $pid = <$f>;
	close $f;
	chomp $pid if defined $pid;
	return (defined $pid && $pid =~ /^\d+$/) ? $pid : undef;
}

while (my $c = $srv->accept) {
	$c->autoflush(1);
	my $line = <$c> // '';
	$line =~ s/\s+$//;
	my ($cmd, $arg) = split ' ', $line;
	my $reply = 'error unknown command';
	$cmd //= '';
	if ($cmd eq 'ping') {
		$reply = 'pong';
	} elsif ($cmd eq 'kill9' || $cmd eq 'alive') {
		my $pid = pid_of($arg // '');
		if (!defined $pid) {
			$reply = 'error no such memserver';
		} elsif ($cmd eq 'kill9') {
			$reply = kill('KILL', $pid) ? 'ok' : "error kill: $!";
			print STDERR "host-control: kill -9 memserver $arg (pid $pid): $reply\n";
		} else {
			$reply = kill(0, $pid) ? 'yes' : 'no';
		}
	}
	print $c "$reply\n";
	close $c;
}
