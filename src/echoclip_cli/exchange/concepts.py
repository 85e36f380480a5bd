"""The coded concepts echoclip's results are reported with, shared by the DICOM SR and FHIR.

EF is LOINC 10230-1 "Left ventricular Ejection fraction", in UCUM ``%``: the method-neutral LVEF
concept (LOINC's by-US, biplane and Teichholz codes name measurement methods a zero-shot estimate
does not use; the method is said by the algorithm identification instead). The devices use the
SNOMED CT concepts of DICOM's own code tables (pydicom's ``codes``), each with the finding site
the task's prompts describe; a task without a standard concept (another binary task of a prompt
file) gets a code of echoclip's private scheme ``99ECHOCLIP``, whose value is the task name.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99ECHOCLIP"  # DICOM: a private scheme's designator starts with 99
PRIVATE_SCHEME_NAME = "echoclip zero-shot tasks"

LVEF = Code("10230-1", "LN", "Left ventricular Ejection fraction")
PERCENT = codes.UCUM.Percent
NO_UNITS = codes.UCUM.NoUnits
SCORE = codes.SCT.Score  # a device's mean cosine between the clip's frames and its prompts
THRESHOLD = codes.DCM.ThresholdValue
PRESENT = codes.SCT.Present
ABSENT = codes.SCT.Absent
MEAN = codes.SCT.Mean  # a study's value: the mean of its clips'
ECHOCARDIOGRAPHY = codes.SCT.Echocardiography
LEFT_VENTRICLE = codes.SCT.LeftVentricle  # where EF is measured
DEVICE_OBSERVER = codes.DCM.Device  # the observer type of an algorithm
COMMENT = codes.DCM.Comment
CLIP_NOT_SCORED = Code("clip-not-scored", PRIVATE_SCHEME, "Clip not scored")


@dataclass(frozen=True)
class Finding:
    """What a binary task looks for, and where."""

    concept: Code
    site: Code | None = None


DEVICE_FINDINGS = {
    # prompts: "echo density in right ventricle/atrium suggestive of catheter, pacer lead, or ICD lead"
    "pacemaker": Finding(codes.SCT.CardiacPacemakerLead),
    "tavr": Finding(codes.SCT.HeartValveProsthesis, codes.SCT.AorticValve),  # a stent-valve in aortic position
    "mitraclip": Finding(codes.SCT.Clip, codes.SCT.MitralValve),
    "impella": Finding(codes.SCT.LeftVentricularAssistDevice, codes.SCT.LeftVentricle),  # a percutaneous LVAD
}


def finding(task: str) -> Finding:
    """The concept of binary task ``task``: a device's, else one of the private scheme."""
    return DEVICE_FINDINGS.get(task) or Finding(Code(task[:16], PRIVATE_SCHEME, f"echoclip task {task}"))


# Coding scheme designators (DICOM) and the FHIR systems that name the same code systems.
FHIR_SYSTEMS = {
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "UCUM": "http://unitsofmeasure.org",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    PRIVATE_SCHEME: "urn:echoclip:task",
}
