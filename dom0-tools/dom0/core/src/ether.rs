//! Ethernet and ARP frames: what dom0's NIC self-test sends and recognizes (and
//! the learning switch of the net back end will build on).

/// An Ethernet (MAC) address.
pub type Mac = [u8; 6];
/// An IPv4 address.
pub type Ipv4 = [u8; 4];

/// The broadcast address.
pub const BROADCAST: Mac = [0xFF; 6];
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Length of an ARP request or reply for IPv4 over Ethernet, header included.
pub const ARP_FRAME_LEN: usize = 42;

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// An ARP request from `mac`/`ip` asking who has `target`, broadcast.
pub fn arp_request(mac: Mac, ip: Ipv4, target: Ipv4) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip);
    // Target hardware address stays zero.
    f[38..42].copy_from_slice(&target);
    f
}

/// If `frame` is an ARP reply telling `to` where `ip` is, the MAC it gives.
pub fn arp_reply(frame: &[u8], to: Mac, ip: Ipv4) -> Option<Mac> {
    let f = frame.get(..ARP_FRAME_LEN)?;
    let u16_at = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
    let fits = f[0..6] == to
        && u16_at(12) == ETHERTYPE_ARP
        && u16_at(14) == 1
        && u16_at(16) == ETHERTYPE_IPV4
        && f[18] == 6
        && f[19] == 4
        && u16_at(20) == ARP_REPLY
        && f[28..32] == ip;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[22..28]);
    fits.then_some(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(m: Mac) -> alloc::string::String {
    alloc::format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0],
        m[1],
        m[2],
        m[3],
        m[4],
        m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const GW: Mac = [0x52, 0x55, 10, 0, 2, 2];

    /// The reply a peer builds from a request.
    fn answer(req: &[u8; ARP_FRAME_LEN], mac: Mac) -> [u8; ARP_FRAME_LEN] {
        let mut r = *req;
        r[0..6].copy_from_slice(&req[6..12]);
        r[6..12].copy_from_slice(&mac);
        r[20..22].copy_from_slice(&ARP_REPLY.to_be_bytes());
        r[22..28].copy_from_slice(&mac);
        r[28..32].copy_from_slice(&req[38..42]);
        r[32..38].copy_from_slice(&req[22..28]);
        r[38..42].copy_from_slice(&req[28..32]);
        r
    }

    #[test]
    fn a_request_and_its_reply() {
        let req = arp_request(ME, [10, 0, 2, 15], [10, 0, 2, 2]);
        assert_eq!(&req[0..6], &BROADCAST);
        assert_eq!(&req[12..14], &[0x08, 0x06]);
        assert_eq!(&req[38..42], &[10, 0, 2, 2]);
        let reply = answer(&req, GW);
        assert_eq!(arp_reply(&reply, ME, [10, 0, 2, 2]), Some(GW));
        // Padded to Ethernet's 60 bytes, as a NIC delivers it.
        let mut padded = reply.to_vec();
        padded.resize(60, 0);
        assert_eq!(arp_reply(&padded, ME, [10, 0, 2, 2]), Some(GW));
        assert_eq!(mac_text(GW), "52:55:0a:00:02:02");
    }

    #[test]
    fn other_frames_are_not_the_reply() {
        let req = arp_request(ME, [10, 0, 2, 15], [10, 0, 2, 2]);
        let reply = answer(&req, GW);
        assert_eq!(arp_reply(&req, ME, [10, 0, 2, 2]), None, "a request");
        assert_eq!(
            arp_reply(&reply, GW, [10, 0, 2, 2]),
            None,
            "for someone else"
        );
        assert_eq!(
            arp_reply(&reply, ME, [10, 0, 2, 3]),
            None,
            "another address"
        );
        assert_eq!(arp_reply(&reply[..41], ME, [10, 0, 2, 2]), None, "short");
        let mut ip = reply;
        ip[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        assert_eq!(arp_reply(&ip, ME, [10, 0, 2, 2]), None, "not ARP");
    }
}
