"""Asking a running DnsService with dnspython."""
import dns.message
import dns.query
import dns.rdatatype


def ask(service, name, rdtype="A", tcp=False, **kw):
    """One query to a running DnsService with dnspython; returns the response message."""
    host, port = service.server.address
    q = dns.message.make_query(name, rdtype, **kw)
    return (dns.query.tcp if tcp else dns.query.udp)(q, host, port=port, timeout=3)


def answers(msg, rdtype=None):
    """The answer section as a set of (name, type, rdata text)."""
    return {(rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype), rd.to_text())
            for rrset in msg.answer for rd in rrset
            if rdtype is None or rrset.rdtype == dns.rdatatype.from_text(rdtype)}
