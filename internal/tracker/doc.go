// Package tracker follows every command to its node's reply: it records
// accepted, published, replied, expired and failed in the backbone's
// bridge.StatusStore, shared by the replicas (a reply may reach another
// replica than the one that published the command), and answers the HTTP
// API's status reads and waits.
package tracker
