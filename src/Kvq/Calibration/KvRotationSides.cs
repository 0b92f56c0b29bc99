namespace Kvq.Calibration;

/// <summary>Which sides of the cache a calibration fits in the Walsh-Hadamard-rotated basis (<c>kvq calibrate --rotate
/// [--rotate-side keys|values]</c>): the side whose spec carries <c>:rot</c> must be calibrated rotated.</summary>
[Flags]
public enum KvRotationSides
{
    None = 0,
    Keys = 1,
    Values = 2,
    Both = Keys | Values,
}
