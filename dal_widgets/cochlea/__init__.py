"""dal_widgets.cochlea: CARFAC and the stabilized auditory image in JAX."""
from dal_widgets.cochlea.carfac import (Carfac, CarfacCoeffs, CarfacHypers, CarfacOutput,
                                        CarfacParams, CarfacState, CarfacWeights, check_input,
                                        design_carfac, init_state, make_weights, run)
from dal_widgets.cochlea.batch import run_batch
from dal_widgets.cochlea.designs import cf_hz, cochleagram, designed, jitted_run

__all__ = ["Carfac", "CarfacCoeffs", "CarfacHypers", "CarfacOutput", "CarfacParams", "CarfacState",
           "CarfacWeights", "cf_hz", "check_input", "cochleagram", "design_carfac", "designed",
           "init_state", "jitted_run", "make_weights", "run", "run_batch"]
