#!/usr/bin/perl
# Writes a synthetic City-like MaxMind DB for bench/geoip_area.c: every
# unicast IPv4 /16 and N random /24 (default 50,000) with one of 4,096
# random positions, in an IPv6 tree with IPv4 aliased, as MaxMind ships
# theirs (GeoLite2-City: ~3.6 million networks, ~70 MB; this one is
# smaller, so its tree stays in the CPU caches more: a floor for a miss).
# Deterministic (seeded).
#   perl bench/geoip_mkdb.pl OUT.mmdb [N]
use strict;
use warnings;
use MaxMind::DB::Writer::Tree;

my ($out, $n) = @ARGV;
die "usage: $0 OUT.mmdb [N]\n" unless $out;
$n ||= 50000;
my %types = (location => 'map', latitude => 'double', longitude => 'double',
             country => 'map', iso_code => 'utf8_string');
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version => 6, record_size => 28, database_type => 'verge-bench-City',
    languages => ['en'], description => {en => 'verge geoip bench'},
    alias_ipv6_to_ipv4 => 1, remove_reserved_networks => 0,
    map_key_type_callback => sub { $types{$_[0]} });
srand(42);
my @pos = map { {latitude => rand(140) - 70, longitude => rand(360) - 180} } 1 .. 4096;
sub rec { return {location => $pos[int(rand(@pos))], country => {iso_code => 'ZZ'}} }
# every /16 of 1.0.0.0-223.255.255.255, then N random /24 inside them:
# lookups end 16 to 24 levels below the IPv4 root, as most do in a real
# database, and every unicast address has a position
for my $a (1 .. 223) {
    $tree->insert_network("$a.$_.0.0/16", rec()) for 0 .. 255;
}
for (1 .. $n) {
    $tree->insert_network(sprintf("%d.%d.%d.0/24", 1 + int(rand(223)), int(rand(256)), int(rand(256))), rec());
}
open my $fh, '>:raw', $out or die "$out: $!";
$tree->write_tree($fh);
close $fh or die "$out: $!";
