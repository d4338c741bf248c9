// Package wireshark holds agentlab_tli.lua, the Wireshark dissector for
// TLI (README.md says how to use it). It has no Go code of its own: its
// tests run tshark with the dissector over captures of tli sessions cut
// into TCP segments every which way; e2e's TestLabCaptureDecrypts runs it
// over a real lab's trace.pcapng.
package wireshark
