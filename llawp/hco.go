package llawp

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
)

// LogHCO writes the HCO's socket parameters the way the vendor's agent does
// at start, one line each (the seed's "HCO Sockets Parameters"):
//
//	hostname='trust_wa1'.
//	maxsocketsperport='20'.
//	minsocketsperport='2'.
//	newsocketstep='2'.
//	requesttimeout='60'.
func LogHCO(log zerolog.Logger, trustedHost string, hco conf.HCO) {
	log.Info().Msgf("hostname='%s'.", trustedHost)
	log.Info().Msgf("maxsocketsperport='%d'.", hco.MaxSocketsPerPort)
	log.Info().Msgf("minsocketsperport='%d'.", hco.MinSocketsPerPort)
	log.Info().Msgf("newsocketstep='%d'.", hco.NewSocketStep)
	log.Info().Msgf("requesttimeout='%d'.", hco.RequestTimeout.D()/time.Second)
}
