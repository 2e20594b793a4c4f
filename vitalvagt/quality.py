"""Quality flags that travel with a reading from the device to the alert engine.

Most come straight from the device's status bits (Bluetooth SIG Blood Pressure, PLX and Heart
Rate status fields); a few are added by the gateway (time source, a second scale user).
"""

from __future__ import annotations

from enum import StrEnum


class Flag(StrEnum):
    # Blood Pressure Measurement status (0x2A35)
    BODY_MOVEMENT = "body_movement"
    CUFF_TOO_LOOSE = "cuff_too_loose"
    IRREGULAR_PULSE = "irregular_pulse"
    PULSE_ABOVE_RANGE = "pulse_above_range"
    PULSE_BELOW_RANGE = "pulse_below_range"
    IMPROPER_POSITION = "improper_position"
    # PLX measurement status (0x2A5E / 0x2A5F)
    MEASUREMENT_ONGOING = "measurement_ongoing"
    EARLY_ESTIMATE = "early_estimate"
    VALIDATED = "validated"
    FULLY_QUALIFIED = "fully_qualified"
    FROM_STORAGE = "from_storage"
    DEMO_DATA = "demo_data"
    TESTING = "testing"
    CALIBRATING = "calibrating"
    UNAVAILABLE = "unavailable"
    QUESTIONABLE = "questionable"
    INVALID = "invalid"
    # PLX device and sensor status
    DISPLAY_UPDATE_ONGOING = "display_update_ongoing"
    EQUIPMENT_MALFUNCTION = "equipment_malfunction"
    SIGNAL_PROCESSING_IRREGULAR = "signal_processing_irregular"
    INADEQUATE_SIGNAL = "inadequate_signal"
    POOR_SIGNAL = "poor_signal"
    LOW_PERFUSION = "low_perfusion"
    ERRATIC_SIGNAL = "erratic_signal"
    NON_PULSATILE = "non_pulsatile"
    QUESTIONABLE_PULSE = "questionable_pulse"
    SIGNAL_ANALYSIS_ONGOING = "signal_analysis_ongoing"
    SENSOR_INTERFERENCE = "sensor_interference"
    SENSOR_NOT_ON_USER = "sensor_not_on_user"
    UNKNOWN_SENSOR = "unknown_sensor"
    SENSOR_DISPLACED = "sensor_displaced"
    SENSOR_MALFUNCTION = "sensor_malfunction"
    SENSOR_DISCONNECTED = "sensor_disconnected"
    DEVICE_CLOCK_NOT_SET = "device_clock_not_set"
    # Heart Rate Measurement
    NO_SKIN_CONTACT = "no_skin_contact"
    # Added by the gateway
    DEVICE_TIME_MISSING = "device_time_missing"  # measured_at is the gateway's receive time
    DEVICE_CLOCK_CORRECTED = "device_clock_corrected"  # device clock drifted; gateway corrected
    OTHER_USER = "other_user"  # a scale/cuff user id that is not this patient's


# A reading with any of these is not a basis for a clinical alarm: it is a reason to ask the
# patient for a new measurement (reference section 2).
UNRELIABLE: frozenset[Flag] = frozenset(
    {
        Flag.BODY_MOVEMENT,
        Flag.CUFF_TOO_LOOSE,
        Flag.IMPROPER_POSITION,
        Flag.DEMO_DATA,
        Flag.TESTING,
        Flag.CALIBRATING,
        Flag.UNAVAILABLE,
        Flag.QUESTIONABLE,
        Flag.INVALID,
        Flag.EQUIPMENT_MALFUNCTION,
        Flag.INADEQUATE_SIGNAL,
        Flag.POOR_SIGNAL,
        Flag.LOW_PERFUSION,
        Flag.ERRATIC_SIGNAL,
        Flag.NON_PULSATILE,
        Flag.QUESTIONABLE_PULSE,
        Flag.SENSOR_NOT_ON_USER,
        Flag.SENSOR_DISPLACED,
        Flag.SENSOR_MALFUNCTION,
        Flag.SENSOR_DISCONNECTED,
        Flag.NO_SKIN_CONTACT,
        Flag.OTHER_USER,
    }
)


def is_reliable(flags: frozenset[Flag] | set[Flag] | tuple[Flag, ...] | list[Flag]) -> bool:
    return not UNRELIABLE.intersection(flags)
