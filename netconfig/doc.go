// Package netconfig owns the appliance's camera network: the camera bridge with isolated ports (or the camera
// VLAN on a trunk), the nftables ruleset that walls the camera network off from the client network and from
// itself, the DHCP server for cameras and its lease file, 802.1X port authentication through supervised
// hostapd processes, MACsec key agreement through wpa_supplicant (macsec_linux), the camera CA that issues the
// cameras' EAP-TLS certificates, and the observation of LLDP and EAPOL frames that tells which camera sits on
// which port.
//
// Everything is applied over netlink (vishvananda/netlink for links and addresses, google/nftables for the
// ruleset); the package never shells out to build rules. Apply is idempotent and Run reconciles drift: a rule
// or link setting changed by hand is put back and logged.
//
// The package must never open the camera network: on any error it leaves the previous (closed) state in
// place, a camera port passes nothing but EAPOL until hostapd reports the camera authorized, and stopping the
// manager leaves the ruleset installed (crash-only: the firewall outlives the daemon). It never enables IP
// forwarding and never logs or returns secrets (PEAP passwords, MKA keys, private keys).
package netconfig
