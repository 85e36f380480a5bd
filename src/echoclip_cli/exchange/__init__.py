"""Results leaving echoclip in the formats hospitals keep them in: a DICOM SR per study (back into
the PACS, beside the images it describes) and a FHIR R4 Bundle per study (into the record).

The building blocks take one study's records (:func:`group_by_study`) and the clips' DICOM
headers by record source, wherever those come from (files, DICOMweb metadata):
:func:`~.sr.build_sr` and :func:`~.sr.write_sr`, :func:`~.fhir.fhir_bundle`. The stream helpers
:func:`with_sr` and :func:`with_fhir` pass a use case's records on and add one output per study.
highdicom (``pip install 'echoclip[pacs]'``) is imported only when an SR is made.
"""

from .fhir import fhir_bundle
from .outputs import BundleRecord, fhir_bundles, with_fhir, with_sr
from .sr import build_sr, write_sr
from .studies import OutputRecord, Provenance, StudyGroups, StudyResults, group_by_study, read_header

__all__ = ["BundleRecord", "OutputRecord", "Provenance", "StudyGroups", "StudyResults", "build_sr", "fhir_bundle",
           "fhir_bundles", "group_by_study", "read_header", "with_fhir", "with_sr", "write_sr"]
